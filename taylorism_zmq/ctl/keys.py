"""keygen, authorize, revoke, keys: they work on the key directory (--key-dir), no boss needed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def keys_command(args: argparse.Namespace) -> int:
    from ..wire import keystore
    from ..wire.security import key_dir, keygen

    authorized = key_dir() / "authorized"
    try:
        if args.command == "keygen":
            if args.boss_key:
                public = keygen(None, "boss", authorize=False, force=args.force)
            else:
                public = keygen(None, args.name, authorize=not args.no_authorize, force=args.force)
            print(f"wrote {public} and {public}_secret (0600)")
            if not args.boss_key and not args.no_authorize:
                print(f"authorized it in {public.parent / 'authorized'} with every role (client, agent, admin, "
                      "boss): "
                      "a boss reading that directory accepts it")
        elif args.command == "authorize":
            path = keystore.authorize(authorized, Path(args.public_key), frozenset(args.role), args.name, args.user)
            print(f"authorized {path.stem} ({', '.join(r for r in keystore.ROLES if r in args.role)}"
                  f"{', runs as ' + args.user if args.user else ''}): {path}")
        elif args.command == "revoke":
            path = keystore.revoke(authorized, args.name)
            print(f"revoked {args.name} (removed {path}); a running boss refuses it from its next message on")
        else:
            keys, problems = keystore.list_keys(authorized)
            print(f"{'NAME':32} {'ROLES':20} {'USER':12} FINGERPRINT")
            for ident in keys:
                print(f"{ident.name[:32]:32} {','.join(r for r in keystore.ROLES if r in ident.roles):20} "
                      f"{(ident.user or '-')[:12]:12} {keystore.fingerprint(ident.key)}")
            for problem in problems:
                print(f"refused: {problem}", file=sys.stderr)
    except (FileExistsError, keystore.KeysError) as exc:
        print(f"taylorism-ctl: {exc}", file=sys.stderr)
        return 1
    return 0
