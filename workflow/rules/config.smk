# What the steps read from the config, written once the config is validated. Each file is
# rewritten only when what it holds changes (its hash is a param), so a training job reruns only
# when its own specs change, and nothing long travels on a command line.


rule validated_config:
    output:
        contract.config_path(RESULTS),
    log:
        run_path("logs/specs/config.log"),
    priority: PREPARE_PRIORITY
    localrule: True
    params:
        config_hash=CONFIG_HASH,
    run:
        contract.write_validated_config(config, params.config_hash, output[0])
        contract.write_text(f"validated config {params.config_hash}\n", log[0])


rule pack_specs:
    output:
        contract.pack_specs_path(RESULTS, "{study}", "{pack}"),
    log:
        run_path("logs/specs/{study}/{pack}.log"),
    priority: PREPARE_PRIORITY
    localrule: True
    params:
        spec_hash=pack_spec_hash,
    run:
        contract.write_json(train_specs(wildcards), output[0])
        contract.write_text(f"specs {params.spec_hash}\n", log[0])


rule study_runs:
    input:
        looks=study_look_dirs,
    output:
        contract.study_runs_path(RESULTS, "{study}"),
    log:
        run_path("logs/specs/{study}.runs.log"),
    localrule: True
    params:
        runs=study_run_dirs,
    run:
        write_study_runs(wildcards.study, params.runs, output[0], log[0])
