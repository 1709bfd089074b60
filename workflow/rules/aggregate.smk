rule aggregate:
    input:
        study_pack_dirs,
        runs=study_runs_file,
    output:
        **{
            name: contract.aggregate_path(RESULTS, "{study}", name)
            for name in contract.AGGREGATES
        },
    log:
        "logs/aggregate/{study}.log",
    localrule: True
    conda:
        "../envs/reglab.yaml"
    params:
        outdir=aggregate_outdir,
    shell:
        "python -m reglab aggregate --runs-file {input.runs:q} --outdir {params.outdir:q} > {log:q} 2>&1"
