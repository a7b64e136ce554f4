"""Small helpers in MindFormers' places (``mindclip.tools.image_tools.load_image``)."""
