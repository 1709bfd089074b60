rule report:
    input:
        report_inputs,
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
        config=report_config_json,
        config_hash=spec_hash(config),
        run_info=RUN_INFO,
    shell:
        "python -m reglab report --config {params.config:q} --config-hash {params.config_hash:q}"
        " --results results --run-info {params.run_info:q} --out {output:q} > {log:q} 2>&1"
