from hybridsolve.cli.main import main

raise SystemExit(main())
