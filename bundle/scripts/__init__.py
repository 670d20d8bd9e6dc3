"""Custom code of the MoME bundle, imported as ``scripts`` (MONAI Bundle convention; MONAI Label imports it too)."""
