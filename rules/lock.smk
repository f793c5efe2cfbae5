# Runs only when the lock is missing: a committed pixi.lock is the source of truth, and
# nothing else in the pipeline needs pixi.
rule lock:
    input:
        manifest=ancient("pixi.toml"),
    output:
        config["lockfile"],
    log:
        "logs/lock.log",
    conda:
        BUILD_TOOLS
    params:
        podenv=PODENV,
    shell:
        "{params.podenv} lock --manifest {input.manifest} > {log} 2>&1"
