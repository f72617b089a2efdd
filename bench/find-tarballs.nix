# The baseline srcgrab is measured against: the approach of nixpkgs'
# maintainers/scripts/find-tarballs.nix, written afresh for any nixpkgs-shaped set.
#
#   nix-instantiate --eval --strict --json bench/find-tarballs.nix --arg pkgs 'import /path/to/set { }'
#
# It walks the package set from the top (into attribute sets marked recurseForDerivations,
# as nix-env and Hydra do; the upstream script recurses into every attribute set of its
# `expr`), then takes the closure over every derivation-valued attribute of every derivation
# (leaving out meta and passthru) with builtins.genericClosure, keyed by outPath, and keeps the
# fixed-output derivations among them.
#
# Result: a list of { path (the outPath), name, urls, algo, hash, mode, postFetch } for every FOD with
# `url` or `urls`, plus `noUrl` = how many FODs had neither. The upstream script keeps only
# flat hashes without postFetch (`mode == "flat" && !postFetch`); the benchmark applies that
# filter afterwards, so one evaluation gives both the strict and the relaxed figure.
#
# What this approach cannot see, by construction:
# - FODs referenced only through string context ("${fetchurl {...}}" in a build script or
#   a postPatch): they are inputs of the .drv but no attribute holds them as a value.
# - FODs of other systems (one evaluation = one system), e.g. aarch64-only patches/binaries.
# - With the upstream filter: fetchzip/fetchFromGitHub (recursive + postFetch), fetchgit
#   (recursive), fetchpatch (postFetch), executable downloads (recursive), and vendor FODs
#   (no URL at all: cargo/go/npm dependencies).
# - Failures: builtins.tryEval catches only throw and assert. An uncatchable error (abort,
#   missing attribute, infinite recursion, a callPackage argument missing, a type error)
#   anywhere in the walk aborts the whole evaluation and yields nothing at all.
# - A source is reported once per outPath, with no record of which attributes need it.
{ pkgs ? import <nixpkgs> { }, expr ? pkgs }:
let
  inherit (builtins) attrNames attrValues concatMap filter genericClosure isAttrs isList tryEval;

  canEval = value: (tryEval value).success;
  isDerivation = value: isAttrs value && (value.type or null) == "derivation";

  # Derivations of the package set, skipping attributes whose evaluation throws.
  roots = value:
    if !(canEval value) then [ ]
    else if isDerivation value then (if canEval value.outPath then [ value ] else [ ])
    else if isAttrs value && (value.recurseForDerivations or false) || value == expr then
      concatMap (name: roots value.${name}) (attrNames value)
    else [ ];

  # Derivations held directly by one attribute value (a derivation or a list of them).
  derivationsIn = value:
    if !(canEval value) then [ ]
    else if isDerivation value then (if canEval value.outPath then [ value ] else [ ])
    else if isList value then concatMap derivationsIn value
    else [ ];

  dependenciesOf = drv:
    concatMap derivationsIn
      (attrValues (removeAttrs drv ([ "meta" "passthru" ] ++ attrNames (drv.passthru or { }))));

  closure = genericClosure {
    startSet = map (drv: { key = drv.outPath; inherit drv; }) (roots expr);
    operator = item: map (drv: { key = drv.outPath; inherit drv; }) (dependenciesOf item.drv);
  };

  fods = filter (drv: (drv.outputHash or "") != "") (map (item: item.drv) closure);
  withUrl = filter (drv: drv ? urls || drv ? url) fods;
in
{
  noUrl = builtins.length fods - builtins.length withUrl;
  fods = map
    (drv: {
      path = drv.outPath;
      inherit (drv) name;
      urls = drv.urls or [ drv.url ];
      algo = drv.outputHashAlgo or null;
      hash = drv.outputHash;
      mode = drv.outputHashMode or "flat";
      postFetch = (drv.postFetch or "") != "";
    })
    withUrl;
}
