--- shell: the default adapter. Nothing to install and no assets: only the workspace travels.
return { name = "shell" }
