"""The method's stages: plain functions over job artifacts; Ray is the shell around them."""
