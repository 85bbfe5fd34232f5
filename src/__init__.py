"""genlab: generative models (autoencoder, VAE, GAN, mini-GPT) with Lightning and Hydra."""
