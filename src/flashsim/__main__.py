from flashsim.cli import main

raise SystemExit(main())
