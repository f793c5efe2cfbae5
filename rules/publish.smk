rule publish_release:
    input:
        release=f"{BUILD}/{{name}}/release.json",
        layers=layer_infos,
        bundle=f"{BUILD}/{{name}}/env-shards.tar",
        archives=layer_archives,
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
        # The env's shards come as one file (rules/env.smk): unpacked beside the record first.
        "(shards=$(dirname {input.bundle})/env-shards && rm -rf $shards && mkdir -p $shards"
        " && tar -C $shards -xf {input.bundle} && {params.podenv} publish {input.release} --layers {input.layers} --store {params.store}"
        " --channel '{params.channel}' --receipt {output.receipt}) > {log} 2>&1"


rule publish:
    input:
        expand(f"{BUILD}/{{name}}/published.json", name=selected_envs()),
    localrule: True
