"""The local web page (`melanoma serve`): Gradio, from the optional `web` extra."""
