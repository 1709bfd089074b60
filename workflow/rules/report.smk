rule report:
    input:
        report_inputs,
        config=contract.config_path(RESULTS),
        published=config["published"],
    output:
        report(
            REPORT,
            caption="../report/index.rst",
            category="Report",
        ),
    log:
        run_path("logs/report.log"),
    localrule: True
    conda:
        "../envs/reglab.yaml"
    threads: 2
    params:
        results=results_root,
        run_info=RUN_INFO,
    shell:
        "python -m reglab report --config {input.config:q} --results {params.results:q}"
        " --run-info {params.run_info:q} --jobs {threads} --out {output:q} > {log:q} 2>&1"


rule study_figures:
    input:
        config=contract.config_path(RESULTS),
        curves=contract.aggregate_path(RESULTS, "{study}", "curves"),
        per_seed=contract.aggregate_path(RESULTS, "{study}", "per_seed"),
    output:
        **{
            name: report(
                study_figure_path("{study}", name),
                caption=caption,
                category="{study}",
                subcategory="Figures",
                labels={"study": "{study}", "figure": name.replace("_", " ")},
            )
            for name, caption in STUDY_FIGURES.items()
        },
    log:
        run_path("logs/figures/{study}.log"),
    localrule: True
    conda:
        "../envs/reglab.yaml"
    script:
        "../scripts/study_figures.py"
