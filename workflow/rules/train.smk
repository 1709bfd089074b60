rule train:
    input:
        dataset=train_dataset,
    output:
        history="results/runs/{study}/{variant}/chunk{chunk}/history.csv",
        final="results/runs/{study}/{variant}/chunk{chunk}/final.csv",
        boundary="results/runs/{study}/{variant}/chunk{chunk}/boundary.npz",
        meta="results/runs/{study}/{variant}/chunk{chunk}/meta.json",
    log:
        "logs/train/{study}/{variant}/chunk{chunk}.log",
    benchmark:
        "benchmarks/train/{study}/{variant}/chunk{chunk}.tsv"
    conda:
        "../envs/reglab.yaml"
    threads: config["threads"]
    resources:
        mem_mb=train_mem_mb,
        runtime=train_runtime,
    params:
        spec=train_spec_json,
        seeds=train_seeds,
        outdir=train_outdir,
        accelerator=config["accelerator"],
    shell:
        "python -m reglab train --spec {params.spec:q} --dataset {input.dataset:q}"
        " --seeds {params.seeds} --chunk {wildcards.chunk} --threads {threads}"
        " --accelerator {params.accelerator:q} --outdir {params.outdir:q} > {log:q} 2>&1"
