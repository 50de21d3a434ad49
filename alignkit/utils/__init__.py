"""Small helpers every part of alignkit shares: argument checks (``validate``), hashes and atomic writes (``io``)."""
