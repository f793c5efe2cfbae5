# podenv build pipeline: pixi.lock -> environment and model layers -> release -> store.
# Targets: build_env, build_models, release, publish, all (= publish).


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/lock.smk"
include: "rules/env.smk"
include: "rules/code.smk"
include: "rules/models.smk"
include: "rules/release.smk"
include: "rules/publish.smk"


rule all:
    default_target: True
    input:
        rules.publish.input,
