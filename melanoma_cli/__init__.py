"""melanoma-cli: classify dermoscopic lesion images into the 9 ISIC classes and flag melanoma.

A decision aid for dermatologists, not a diagnosis.
"""

__version__ = "0.5.0"
