"""The MoME MONAI Label app's building blocks; imported as ``lib`` (MONAI Label puts the app folder on the path)."""
