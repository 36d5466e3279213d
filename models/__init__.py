"""Models: denoisers (``models.denoisers``) and data distributions (``models.distributions``)."""
