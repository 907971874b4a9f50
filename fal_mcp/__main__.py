from fal_mcp.cli import main

raise SystemExit(main())
