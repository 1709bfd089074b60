rule dataset:
    output:
        "results/datasets/{dataset}.npz",
    params:
        spec=dataset_spec_json,
    log:
        "logs/dataset/{dataset}.log",
    localrule: True
    shell:
        "python -m reglab dataset --spec {params.spec:q} --out {output:q} > {log:q} 2>&1"
