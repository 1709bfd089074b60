# Sequential seeding (a study with seeds: {start, step, max}): after each look a checkpoint tests
# the study's claims on the seeds so far with group-sequential boundaries (reglab.looks) and says
# which variants the next look trains; the study's aggregate waits for the last look it runs.


checkpoint sequential_look:
    input:
        look_inputs,
        config=contract.config_path(RESULTS),
    output:
        directory(contract.sequential_look_dir(RESULTS, "{study}", "{look}")),
    log:
        run_path("logs/sequential/{study}/look{look}.log"),
    localrule: True
    params:
        runs=study_run_dirs,
    run:
        write_sequential_look(wildcards, input, output, params, log)
