rule publish_release:
    input:
        release=f"{BUILD}/{{name}}/release.json",
        layers=layer_infos,
    output:
        receipt=f"{BUILD}/{{name}}/published.json",
    log:
        "logs/{name}/publish.log",
    conda:
        BUILD_TOOLS
    params:
        podenv=PODENV,
        store=store_url(),
        channel=config["channel"],
    shell:
        "{params.podenv} publish {input.release} --layers {input.layers} --store {params.store}"
        " --channel '{params.channel}' --receipt {output.receipt} > {log} 2>&1"


rule publish:
    input:
        expand(f"{BUILD}/{{name}}/published.json", name=selected_envs()),
    localrule: True
