"""The paper's defaults (Appendix C), one owner for every layer.

Plain numbers and names, no imports: the mathematics (models, distributions) and the
application (``evae_tf.config``, the command lines) read them from here, so a default is
written once. docs/math.md, 'Training defaults (Appendix C)', explains each.
"""

STEP = 100.0 ** (-2.0 / 9.0)  # b(100) ≈ 0.359381: the step size of z = b (mu + r K) + U
SPREAD_FLOOR = 1e-3  # r_min: r = softplus(raw_spread) + r_min
SUPPORT_FLOOR = 1e-3  # B_min: B = softplus(raw_support) + B_min
SUPPORT = "learned"  # B is an encoder head unless a positive number fixes it
LATENT_DIM = 64
MODEL_KINDS = ("evae", "vae")

EPOCHS = 50
BATCH_SIZE = 100
LEARNING_RATE = 1e-4  # Adam

SAMPLER_COMPONENTS = 10  # the ex-post Gaussian mixture
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")  # scikit-learn's names
COVARIANCE_TYPE = "full"
