rule report:
    input:
        report_inputs,
        config=contract.config_path(RESULTS),
        published=config["published"],
    output:
        report(
            "report/index.html",
            caption="../report/index.rst",
            category="Report",
        ),
    log:
        "logs/report.log",
    localrule: True
    conda:
        "../envs/reglab.yaml"
    params:
        results=results_root,
        run_info=RUN_INFO,
    shell:
        "python -m reglab report --config {input.config:q} --results {params.results:q}"
        " --run-info {params.run_info:q} --out {output:q} > {log:q} 2>&1"
