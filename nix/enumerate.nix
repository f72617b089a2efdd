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

  # nixpkgs is called as a user would call it, with the set's own default config plus the
  # flags asked for (so a fork whose packages use alias names evaluates), and with the
  # overlays given by --arg or none: never ~/.config/nixpkgs/overlays.nix or
  # <nixpkgs-overlays>, which nixpkgs reads when no `overlays` argument is passed.
  nixpkgsWith = system: config: fn (userArgs // { inherit system config; }
    // (if (builtins.functionArgs fn) ? overlays then { overlays = userArgs.overlays or [ ]; } else { }));
  nixpkgsFor = system: nixpkgsWith system ((userArgs.config or { }) // configFlags);

  # The names walked are those of the set without its aliases, as Hydra lists it: an alias
  # only repeats another attribute or throws "has been renamed".
  listingFor = system: nixpkgsWith system ((userArgs.config or { }) // configFlags // { allowAliases = false; });

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

  perSystem = f: builtins.listToAttrs (map (system: { name = system; value = f system; }) systems);
  roots = perSystem (if mode == "nixpkgs" then nixpkgsFor else fileFor);
  listings = if mode == "nixpkgs" then perSystem listingFor else roots;

  at = root: path: builtins.foldl' (set: name: set.${name}) root path;

  # The names of a walked set, from the alias-free listing of the same path; where that
  # listing throws (an alias-only set in a fork), from the set itself.
  childrenOf = system: path: value:
    let
      listed = builtins.tryEval (builtins.attrNames (at listings.${system} path));
      names = if listed.success then builtins.filter (name: value ? ${name}) listed.value else builtins.attrNames value;
    in
    builtins.filter (name: name != "recurseForDerivations") names;

  isDerivation = v: builtins.isAttrs v && (v.type or null) == "derivation";

  # nix-env -qa / Hydra: below the top, only sets with recurseForDerivations are walked;
  # a --file jobset is walked through every set that is not a derivation.
  walked = explicit: v:
    explicit || mode == "file" || (v.recurseForDerivations or false) == true;
in
rec {
  # Forces every system's root, so a tree that cannot be loaded fails once, up front.
  check = map (system: builtins.isAttrs roots.${system} || builtins.isFunction roots.${system}) systems;

  # SYSTEM is an index into settings.systems: questions are sent one byte at a time, so
  # they are kept short. A derivation another shard owns is not instantiated here.
  describe = systemIndex: path: explicit: owned:
    let
      system = builtins.elemAt systems systemIndex;
      value = at roots.${system} path;
    in
    if isDerivation value then (if owned then { drv = value.drvPath; } else { skip = true; })
    else if builtins.isAttrs value && walked explicit value then { children = childrenOf system path value; }
    else { skip = true; };

  # Several siblings of PARENT in one question, each answered as `describe` would, or with
  # `caught` when it throws (the walk then asks it alone, for its message), and traced as
  # `SRCGRAB-ITEM <json>` in order as soon as it is answered. An error that tryEval cannot
  # catch ends the question: it is the error of the first sibling not traced, and the walk
  # goes on with the ones after it.
  siblings = systemIndex: parent: names: owned:
    builtins.foldl'
      (answered: i:
        let
          answer = describe systemIndex (parent ++ [ (builtins.elemAt names i) ]) false (builtins.elemAt owned i);
          tried = builtins.tryEval (builtins.deepSeq answer answer);
        in
        builtins.trace ("SRCGRAB-ITEM " + builtins.toJSON (if tried.success then tried.value else { caught = true; }))
          (answered + 1))
      0
      (builtins.genList (i: i) (builtins.length names));
}
