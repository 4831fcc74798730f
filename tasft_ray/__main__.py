from tasft_ray.cli import main

raise SystemExit(main())
