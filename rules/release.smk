rule make_release:
    input:
        layers=layer_infos,
    output:
        f"{BUILD}/{{name}}/release.json",
    log:
        "logs/{name}/release.log",
    conda:
        BUILD_TOOLS
    params:
        podenv=PODENV,
        version=release_version,
        lock=config["lockfile"],
        spec=spec_path_of,
        sources=lock_and_spec_digest,
    shell:
        "{params.podenv} release {params.spec} --lock {params.lock} --layers {input.layers}"
        " --version {params.version} --output {output} > {log} 2>&1"


rule release:
    input:
        expand(f"{BUILD}/{{name}}/release.json", name=selected_envs()),
    localrule: True
