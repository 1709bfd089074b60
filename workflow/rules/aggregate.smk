rule aggregate:
    input:
        study_pack_dirs,
        runs=study_runs_file,
    output:
        **{
            name: report(
                contract.aggregate_path(RESULTS, "{study}", name),
                caption="../report/aggregate.rst",
                category="{study}",
                subcategory="Tables",
                labels={"study": "{study}", "table": f"{name}.csv"},
            )
            for name in contract.AGGREGATES
        },
    log:
        run_path("logs/aggregate/{study}.log"),
    localrule: True
    conda:
        "../envs/reglab.yaml"
    params:
        outdir=aggregate_outdir,
    shell:
        "python -m reglab aggregate --runs-file {input.runs:q} --outdir {params.outdir:q} > {log:q} 2>&1"
