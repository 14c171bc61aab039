# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
