--- shell: the default adapter. Nothing to install and no assets: only the workspace travels.
return {
  name = "shell",
  detect = nil,
  install = nil,
  excludes = {},
  preserve = {},
  assets = function() return {} end,
  hooks = {},
}
