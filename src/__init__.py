"""genlab: generative models (autoencoder, VAE, GAN, mini-GPT) with Lightning and Hydra."""

import warnings

# Lightning 2.6 calls a torch pytree API that torch 2.14 deprecates: a warning in every run of every
# entry point, and nothing for us to act on.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)
