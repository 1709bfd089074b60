rule fused_kernels:
    output:
        f"{RESULTS}/kernels/{{family}}.json",
    log:
        run_path("logs/kernels/{family}.log"),
    priority: PREPARE_PRIORITY
    localrule: True
    conda:
        "../envs/reglab.yaml"
    params:
        code_hash=KERNEL_CODE,
    shell:
        "python -m reglab kernels --family {wildcards.family:q} --out {output:q} > {log:q} 2>&1"


rule train:
    input:
        dataset=train_dataset,
        specs=pack_specs_file,
        kernels=train_kernels,
    output:
        directory(pack_dir("{study}", "{pack}", "{chunk}")),
    log:
        log=run_path("logs/train/{study}/{pack}/chunk{chunk}.log"),
        metrics=run_path("logs/train/{study}/{pack}/chunk{chunk}.metrics.csv"),
    benchmark:
        run_path("benchmarks/train/{study}/{pack}/chunk{chunk}.tsv")
    priority: train_priority
    conda:
        "../envs/reglab.yaml"
    threads: config["threads"]
    resources:
        mem_mb=train_mem_mb,
        runtime=train_runtime,
        gpu=train_gpus,
    params:
        seeds=train_seeds,
        max_replicas=train_max_replicas,
        accelerator=config["accelerator"],
        engine=config["engine"],
        code_hash=TRAIN_CODE,
    shell:
        "python -m reglab train --spec-file {input.specs:q} --dataset {input.dataset:q}"
        " --seeds {params.seeds} --chunk {wildcards.chunk} --threads {threads} --max-replicas {params.max_replicas}"
        " --accelerator {params.accelerator:q} --engine {params.engine:q} --code-hash {params.code_hash:q} --progress-csv {log.metrics:q} --outdir {output:q} > {log.log:q} 2>&1"
