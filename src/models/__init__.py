"""The model families: LightningModules, one file each, over the plain networks in `nets/`.

`MODEL_CLASSES` is the allow-list of classes a checkpoint may name: src.utils.checkpoint rebuilds
only these (a checkpoint is data from anyone; whatever else it names is never imported or called).
A new family adds its class here.
"""

MODEL_CLASSES = frozenset(
    {
        "src.models.autoencoder.Autoencoder",
        "src.models.vae.VAE",
        "src.models.gan.GAN",
        "src.models.gpt.GPT",
        "src.models.diffusion.Diffusion",
        "src.models.classifier.Classifier",
        "src.models.normalizing_flow.NormalizingFlow",
    }
)
