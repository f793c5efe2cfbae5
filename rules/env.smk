rule install_env:
    input:
        lock=config["lockfile"],
    output:
        prefix=directory(f"{BUILD}/{{name}}/prefix"),
    log:
        "logs/{name}/install_env.log",
    conda:
        BUILD_TOOLS
    params:
        podenv=PODENV,
        spec=spec_path_of,
        settings=env_install_settings,
        cache=CACHE,
    shell:
        "{params.podenv} env install {params.spec} --lock {input.lock}"
        " --prefix {output.prefix} --cache {params.cache} > {log} 2>&1"


rule pack_env:
    input:
        prefix=f"{BUILD}/{{name}}/prefix",
    output:
        archive=directory(f"{BUILD}/{{name}}/env-shards"),
        info=f"{BUILD}/{{name}}/env.json",
    log:
        "logs/{name}/pack_env.log",
    conda:
        BUILD_TOOLS
    params:
        podenv=PODENV,
    shell:
        "{params.podenv} env pack {input.prefix} --output {output.archive} --info {output.info} > {log} 2>&1"


rule build_env:
    input:
        expand(f"{BUILD}/{{name}}/env.json", name=selected_envs()),
    localrule: True
