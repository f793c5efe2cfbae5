rule install_env:
    input:
        lock=config["lockfile"],
    output:
        prefix=directory(f"{BUILD}/{{name}}/prefix"),
    log:
        "logs/{name}/install_env.log",
    params:
        spec=spec_path_of,
        settings=env_install_settings,
    shell:
        "{PODENV} env install {params.spec} --lock {input.lock}"
        " --prefix {output.prefix} --cache {CACHE} > {log} 2>&1"


rule pack_env:
    input:
        prefix=f"{BUILD}/{{name}}/prefix",
    output:
        archive=f"{BUILD}/{{name}}/env.tar.zst",
        info=f"{BUILD}/{{name}}/env.json",
    log:
        "logs/{name}/pack_env.log",
    shell:
        "{PODENV} env pack {input.prefix} --output {output.archive} --info {output.info} > {log} 2>&1"


rule build_env:
    input:
        expand(f"{BUILD}/{{name}}/env.json", name=selected_envs()),
    localrule: True
