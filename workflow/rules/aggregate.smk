rule aggregate:
    input:
        study_pack_dirs,
    output:
        summary="results/aggregate/{study}/summary.csv",
        per_seed="results/aggregate/{study}/per_seed.csv",
        curves="results/aggregate/{study}/curves.csv",
        finals="results/aggregate/{study}/finals.csv",
        runtime="results/aggregate/{study}/runtime.csv",
    log:
        "logs/aggregate/{study}.log",
    localrule: True
    conda:
        "../envs/reglab.yaml"
    params:
        runs=study_runs_arg,
        outdir="results/aggregate/{study}",
    shell:
        "python -m reglab aggregate --runs {params.runs} --outdir {params.outdir:q} > {log:q} 2>&1"
