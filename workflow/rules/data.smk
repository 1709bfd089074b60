rule dataset:
    input:
        dataset_file,
    output:
        contract.dataset_path(RESULTS, "{dataset}"),
    log:
        run_path("logs/dataset/{dataset}.log"),
    priority: PREPARE_PRIORITY
    localrule: True
    conda:
        "../envs/reglab.yaml"
    params:
        spec=dataset_spec_json,
        code_hash=DATA_CODE,
    shell:
        "python -m reglab dataset --spec {params.spec:q} --out {output:q} > {log:q} 2>&1"
