# Loaded once into each `nix repl` worker of `srcgrab enumerate`, then asked one question per
# task: what is at attribute PATH of the package set for SYSTEM?
#
#   source    the expression to import: the nixpkgs tree or the --file expression
#   exprArgs  --arg values, already evaluated by the repl line that loads this file
#   settings  from a JSON file: mode ("nixpkgs" or "file"), systems, config flags, --argstr
{ source, exprArgs, settings }:
let
  inherit (settings) mode systems;
  fn = import source;
  userArgs = settings.strArgs // exprArgs;

  # Only the flags asked for are set, so a --arg config keeps the rest of its settings.
  configFlags =
    (if settings.allowUnfree then { allowUnfree = true; } else { })
    // (if settings.allowBroken then { allowBroken = true; } else { })
    // (if settings.allowInsecure then { allowInsecurePredicate = _: true; } else { });

  # nixpkgs: aliases only repeat other attributes (or throw "has been renamed"), so they are
  # left out like Hydra does.
  nixpkgsFor = system: fn (userArgs // {
    inherit system;
    config = { allowAliases = false; } // (userArgs.config or { }) // configFlags;
  });

  # --file: call a function like nix-build does, with the arguments it names (all of them
  # for `{ ... }:`); `system` and the config flags only when it takes them.
  fileFor = system:
    if !builtins.isFunction fn then fn
    else
      let
        formals = builtins.functionArgs fn;
        offered = userArgs
          // (if formals ? system then { inherit system; } else { })
          // (if formals ? config && configFlags != { } then { config = (userArgs.config or { }) // configFlags; } else { });
      in
      fn (if formals == { } then offered else builtins.intersectAttrs formals offered);

  roots = builtins.listToAttrs (map (system: {
    name = system;
    value = if mode == "nixpkgs" then nixpkgsFor system else fileFor system;
  }) systems);

  isDerivation = v: builtins.isAttrs v && (v.type or null) == "derivation";

  # nix-env -qa / Hydra: below the top, only sets with recurseForDerivations are walked;
  # a --file jobset is walked through every set that is not a derivation.
  walked = explicit: v:
    explicit || mode == "file" || (v.recurseForDerivations or false) == true;
in
{
  # Forces every system's root, so a tree that cannot be loaded fails once, up front.
  check = map (system: builtins.isAttrs roots.${system} || builtins.isFunction roots.${system}) systems;

  # SYSTEM is an index into settings.systems: questions are sent one byte at a time, so
  # they are kept short.
  describe = system: path: explicit:
    let value = builtins.foldl' (set: name: set.${name}) roots.${builtins.elemAt systems system} path;
    in
    if isDerivation value then { drv = value.drvPath; }
    else if builtins.isAttrs value && walked explicit value then
      { children = builtins.filter (name: name != "recurseForDerivations") (builtins.attrNames value); }
    else { skip = true; };
}
