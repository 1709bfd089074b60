rule dataset:
    output:
        contract.dataset_path(RESULTS, "{dataset}"),
    log:
        "logs/dataset/{dataset}.log",
    localrule: True
    conda:
        "../envs/reglab.yaml"
    params:
        spec=dataset_spec_json,
    shell:
        "python -m reglab dataset --spec {params.spec:q} --out {output:q} > {log:q} 2>&1"
