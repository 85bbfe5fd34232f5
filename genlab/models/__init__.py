"""The model families: LightningModules, one file each, over the plain networks in `nets/`.

A new family adds its class to MODEL_CLASSES in genlab/checkpoints/rebuild.py: the allow-list of the classes a
checkpoint may name (a checkpoint is data from anyone; whatever else it names is never imported or called).
"""
