from mockglot.cli import main

raise SystemExit(main())
