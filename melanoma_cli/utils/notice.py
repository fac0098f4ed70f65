"""The decision-aid notice shown wherever a prediction is shown (CLI today, a web page later)."""

DISCLAIMER = "Decision aid only: not a diagnosis. Refer suspicious lesions to a dermatologist."
