"""placeholder while 05 is rewritten"""
KEY_LINES = [r"^device: ", r"^loss=[\d.]+ accuracy="]
BAD_RUN = (["--steps", "0"], "argument --steps: must be in 1..20000, got 0")
FLAG_RUN = ["--steps", "20"]
