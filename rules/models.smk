rule build_model:
    output:
        archive=f"{BUILD}/{{name}}/models/{{model}}.tar.zst",
        info=f"{BUILD}/{{name}}/models/{{model}}.json",
    log:
        "logs/{name}/model_{model}.log",
    conda:
        BUILD_TOOLS
    params:
        podenv=PODENV,
        spec=spec_path_of,
        settings=model_settings,
        sources=model_sources_digest,
    shell:
        "{params.podenv} model build {params.spec} {wildcards.model} --output {output.archive}"
        " --info {output.info} > {log} 2>&1"


rule build_models:
    input:
        [info for name in selected_envs() for info in model_layer_infos_of(name)],
    localrule: True
