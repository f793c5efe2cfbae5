# The handler and its plugins (config code_dir, the worker package) as the release's code layer:
# deterministic, so unchanged code is the same blob and a new release shares it.
rule pack_code:
    output:
        archive=f"{BUILD}/{{name}}/code.tar.zst",
        info=f"{BUILD}/{{name}}/code.json",
    log:
        "logs/{name}/pack_code.log",
    conda:
        BUILD_TOOLS
    params:
        podenv=PODENV,
        source=config["code_dir"],
        sources=code_digest,
    shell:
        "{params.podenv} code pack {params.source} --output {output.archive} --info {output.info} > {log} 2>&1"
