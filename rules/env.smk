# Install, pack and remove the prefix in one job: the installed env (symlinks, exec bits, its
# build path) never leaves the rule, only the layer does, as one plain file (a tar of the shard
# blobs and index.json), so the rule's outputs survive a round trip through S3 on a cluster
# (docs/build-cluster.md). A directory output would not: the S3 storage plugin caches that a
# directory is absent before the job runs and reports it missing after.
rule env_layer:
    input:
        lock_if_missing,
    output:
        bundle=f"{BUILD}/{{name}}/env-shards.tar",
        info=f"{BUILD}/{{name}}/env.json",
    log:
        "logs/{name}/env_layer.log",
    conda:
        BUILD_TOOLS
    params:
        podenv=PODENV,
        lock=config["lockfile"],
        spec=spec_path_of,
        sources=lock_digest,
        settings=env_install_settings,
        cache=CACHE,
        prefix=lambda wildcards: f"{BUILD}/{wildcards.name}/prefix",
    shell:
        # The shards beside the layer record (which names them relative to itself).
        "(shards=$(dirname {output.info})/env-shards && rm -rf $shards"
        " && {params.podenv} env build {params.spec} --lock {params.lock} --prefix {params.prefix}"
        " --cache {params.cache} --output $shards --info {output.info}"
        " && tar -C $shards -cf {output.bundle} .) > {log} 2>&1"


rule build_env:
    input:
        expand(f"{BUILD}/{{name}}/env.json", name=selected_envs()),
    localrule: True
