# Runs only when the lock is missing: a committed pixi.lock is the source of truth, and
# nothing else in the pipeline needs pixi. It runs where the workflow starts (a source file,
# which goes out to cluster jobs with the other sources).
rule lock:
    input:
        manifest=ancient("pixi.toml"),
    output:
        config["lockfile"],
    log:
        "logs/lock.log",
    localrule: True
    conda:
        BUILD_TOOLS
    params:
        podenv=PODENV,
    shell:
        "{params.podenv} lock --manifest {input.manifest} > {log} 2>&1"
