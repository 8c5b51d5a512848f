"""Files: written atomically and never through a symlink out of their folder (fileio), JSON
and safetensors read with bounded memory (safejson, safetensors_file), fingerprints of models
and data, and the run folder's format (runfolder)."""
