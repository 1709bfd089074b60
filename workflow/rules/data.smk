rule dataset:
    output:
        "results/datasets/{dataset}.npz",
    log:
        "logs/dataset/{dataset}.log",
    localrule: True
    conda:
        "../envs/reglab.yaml"
    params:
        spec=dataset_spec_json,
    shell:
        "python -m reglab dataset --spec {params.spec:q} --out {output:q} > {log:q} 2>&1"
