"""The jet-image study's methods (its models), named once: the CLI's choices, the
workflow's wildcards and the checkpoints' names."""

#: Top taggers (supervised).
TAGGERS = ("mlp", "cnn")
#: The autoencoders: on QCD (top as the anomaly), on top (the inverse task), and the denoiser.
AUTOENCODERS = ("autoencoder", "autoencoder_inverse")
METHODS = (*TAGGERS, *AUTOENCODERS, "denoising_autoencoder")
#: Every model is trained.
LEARNED = METHODS
