"""The configs shipped with egt: this folder is installed as the package `egt.configs` (pyproject.toml maps it).

    egt configs list                                  # every shipped config
    egt configs show qwen2.5-vl-7b/score.yaml         # print one
    egt configs copy all configs                      # a ./configs like a clone's (accelerate needs real files)
    egt score --config egt:qwen2.5-vl-7b/score.yaml   # use one where it is installed

In a clone the same files are at configs/... (the paths the docs use). egt.core.shipped finds them both ways.
"""
