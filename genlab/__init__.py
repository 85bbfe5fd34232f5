"""genlab: generative models (autoencoder, VAE, GAN, mini-GPT) with Lightning and Hydra."""

import logging
import warnings

# Lightning 2.6 calls a torch pytree API that torch 2.14 deprecates: a warning in every run of every
# entry point, and nothing for us to act on.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)

# Lightning 2.6 advertises its cloud logger in every run, and warns in every short run (a test, debug=limit)
# that an epoch shorter than log_every_n_steps writes none of its training steps: noise. The two filters
# match those two messages only; every other Lightning message and warning still shows.
warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging")


class _WithoutAdvertisement(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip: For seamless cloud logging")


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_WithoutAdvertisement())
