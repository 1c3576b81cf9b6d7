classdef dlarray
    % Octave test double of MATLAB's dlarray (Deep Learning Toolbox), with reverse-mode automatic
    % differentiation recorded on a trace, written from MathWorks' documentation:
    %   dlarray            https://www.mathworks.com/help/deeplearning/ref/dlarray.html
    %   dlfeval            https://www.mathworks.com/help/deeplearning/ref/dlfeval.html
    %   dlgradient         https://www.mathworks.com/help/deeplearning/ref/dlarray.dlgradient.html
    %   AD in the toolbox  https://www.mathworks.com/help/deeplearning/ug/include-automatic-differentiation.html
    %   functions          https://www.mathworks.com/help/deeplearning/ug/list-of-functions-with-dlarray-support.html
    %
    % Storage: dlX = dlarray(X) is unformatted; dlX = dlarray(X, fmt) labels the dimensions with the
    % characters of fmt ('S' spatial, 'C' channel, 'B' batch, 'T' time, 'U' unspecified) and PERMUTES the
    % data so that the labels are in the order S..., C, B, T, U (e.g. dlarray(X, 'BC') is stored as 'CB').
    % extractdata returns the stored (permuted) data, without trace (extractdata page); dims the format.
    %
    % Tracing (dlfeval, dlgradient pages): dlfeval(fun, ...) traces the dlarray objects in its inputs
    % (also inside cell arrays, structures, tables and a dlnetwork's Learnables); every operation below on
    % a traced dlarray is recorded (one node: operation, operands, result). dlgradient(y, x, ...) walks
    % the trace backwards from y. Each operation's backward rule is written with the same dlarray
    % operations, so with 'EnableHigherDerivatives', true the backward pass is itself recorded and its
    % result can be differentiated again; without it the gradients are not traced, and differentiating
    % them errors ("ensure that the 'EnableHigherDerivatives' option is true otherwise you will get an
    % error": MathWorks Answers 587696). With 'RetainData' false (default) and no higher derivatives, the
    % intermediate values of y's trace are discarded after the call (dlgradient page, RetainData): a
    % later dlgradient through them errors here. NOT confirmed by any page: the wording and identifiers
    % of these errors, that a later call errors (rather than anything else), and that the gradient with
    % respect to an x that y does not depend on is zeros.
    %
    % Operations (and the MATLAB rules the double enforces): + - .* ./ .^ (elementwise, implicit
    % expansion; formatted operands must have the same format, an unformatted or numeric operand takes the
    % other's), * (only for unformatted operands or with a scalar: Answers 649423), .' ', sum (dim or
    % 'all'), mean, exp, log, sqrt, abs, tanh, reshape, indexing X(i, j), stripdims, finddim, relu,
    % leakyrelu, sigmoid, softmax (over 'C'), fullyconnect, mse, crossentropy, l2loss, l1loss, huber,
    % and prod (whose derivative cannot be traced: "dlgradient does not support calculating
    % higher-order derivatives that depend on ... prod", Answers 587696), as lstm and gru (the LSTM and
    % GRU layer doubles mark their output with dlarray.noHigherDerivatives). Function pages: dlarray.mse,
    % dlarray.crossentropy, dlarray.fullyconnect, dlarray.relu, dlarray.leakyrelu, dlarray.sigmoid,
    % dlarray.softmax, dlarray.l2loss, dlarray.l1loss, dlarray.huber (all under
    % https://www.mathworks.com/help/deeplearning/ref/). Anything else errors ('not in the double').
    properties (SetAccess = private)
        % Data is not empty by default: Octave 7 consults the overloaded numel/size while the constructor
        % assigns properties, and a 0x0 Data would make the object read as an empty array.
        Data = 0
        Format = ''
        % Node of the derivative trace (0: not traced) and the dlfeval call that trace belongs to.
        Id = 0
        Trace = 0
    end
    methods

        function obj = dlarray(X, fmt)
            if nargin == 0
                return
            end
            if isa(X, 'dlarray')
                if nargin < 2 || isempty(fmt)
                    obj = X;
                    return
                end
                if ~isempty(X.Format)
                    error('dlarray:invalidFormat', 'X is already formatted ''%s''', X.Format);
                end
                [data, newFmt, order] = dlarray.labelled(X.Data, fmt);
                if isequal(size(data), size(X.Data))
                    obj = dlarray.record('permute', {X}, data, newFmt, order);
                else
                    obj = dlarray.record('relabel', {reshape(X, size(data))}, data, newFmt, []);
                end
                return
            end
            if ~isnumeric(X) && ~islogical(X)
                error('dlarray:invalidData', 'dlarray data must be numeric or logical, got %s', class(X));
            end
            if nargin < 2 || isempty(fmt)
                obj.Data = X;
                return
            end
            [obj.Data, obj.Format] = dlarray.labelled(X, fmt);
        end

        % -- data and format -----------------------------------------------------------------------
        function n = numel(obj, varargin)
            n = numel(obj.Data);
        end

        function X = extractdata(obj)
            X = obj.Data;
        end

        function fmt = dims(obj)
            fmt = obj.Format;
        end

        function d = finddim(obj, label)
            d = find(obj.Format == label);
        end

        function X = stripdims(obj)
            X = dlarray.record('relabel', {obj}, obj.Data, '', []);
        end

        function c = underlyingType(obj)
            c = class(obj.Data);
        end

        function varargout = size(obj, varargin)
            [varargout{1:max(nargout, 1)}] = size(obj.Data, varargin{:});
        end

        function n = ndims(obj)
            n = ndims(obj.Data);
        end

        function tf = isempty(obj)
            tf = isempty(obj.Data);
        end

        function tf = isscalar(obj)
            tf = isscalar(obj.Data);
        end

        function tf = isreal(obj)
            tf = isreal(obj.Data);
        end

        function e = end(obj, k, n)
            sz = size(obj.Data);
            if k < n
                e = sz(k);
            else
                e = prod(sz(k:end));
            end
        end

        function d = double(obj)
            % MATLAB errors here for dlarray too: callers must use extractdata.
            error('dlarray:double', 'use extractdata to get the data of a dlarray');
        end

        function disp(obj)
            fprintf('  dlarray %s (format ''%s''%s)\n', mat2str(size(obj.Data)), obj.Format, ...
                    repmat(', traced', 1, obj.Id > 0));
            disp(obj.Data);
        end

        % -- indexing -----------------------------------------------------------------------------
        function out = subsref(obj, s)
            switch s(1).type
                case '()'
                    subs = s(1).subs;
                    fmt = '';
                    if numel(subs) >= max(numel(obj.Format), 2)
                        fmt = obj.Format;
                    end
                    out = dlarray.record('index', {obj}, obj.Data(subs{:}), fmt, subs);
                case '.'
                    out = builtin('subsref', obj, s(1));
                otherwise
                    error('dlarray:indexing', 'brace indexing is not supported for dlarray');
            end
            if numel(s) > 1
                out = subsref(out, s(2:end));
            end
        end

        % -- elementwise arithmetic ----------------------------------------------------------------
        function out = plus(a, b)
            [da, db, fmt] = dlarray.operands(a, b);
            out = dlarray.record('plus', {a, b}, da + db, fmt, []);
        end

        function out = minus(a, b)
            [da, db, fmt] = dlarray.operands(a, b);
            out = dlarray.record('minus', {a, b}, da - db, fmt, []);
        end

        function out = uminus(a)
            out = dlarray.record('uminus', {a}, -a.Data, a.Format, []);
        end

        function out = uplus(a)
            out = a;
        end

        function out = times(a, b)
            [da, db, fmt] = dlarray.operands(a, b);
            out = dlarray.record('times', {a, b}, da .* db, fmt, []);
        end

        function out = rdivide(a, b)
            [da, db, fmt] = dlarray.operands(a, b);
            out = dlarray.record('rdivide', {a, b}, da ./ db, fmt, []);
        end

        function out = power(a, b)
            [da, db, fmt] = dlarray.operands(a, b);
            out = dlarray.record('power', {a, b}, da.^db, fmt, []);
        end

        function out = mtimes(a, b)
            if numel(a) == 1 || numel(b) == 1
                out = times(a, b);
                return
            end
            [da, db, fa, fb] = dlarray.operandData(a, b);
            if ~isempty(fa) || ~isempty(fb)
                % Answers 649423: mtimes is supported only when one input is a formatted dlarray and the
                % other an unformatted scalar.
                error('dlarray:mtimesFormatted', ['matrix multiplication of a formatted dlarray is not ', ...
                                                  'supported; use fullyconnect or stripdims']);
            end
            out = dlarray.record('mtimes', {a, b}, da * db, '', []);
        end

        function out = mpower(a, b)
            if numel(a) ~= 1 || numel(b) ~= 1
                error('dlarray:notImplemented', 'the dlarray double raises scalars to scalar powers only (use .^)');
            end
            out = power(a, b);
        end

        function out = mrdivide(a, b)
            if numel(b) ~= 1
                error('dlarray:notImplemented', 'the dlarray double divides by scalars only');
            end
            out = rdivide(a, b);
        end

        function out = transpose(a)
            if ~isempty(a.Format)
                error('dlarray:transposeFormatted', 'transpose of a formatted dlarray: use stripdims first');
            end
            out = dlarray.record('transpose', {a}, a.Data.', '', []);
        end

        function out = ctranspose(a)
            out = transpose(a);
        end

        % -- comparisons (not differentiable: untraced logical results) ----------------------------
        function out = gt(a, b)
            [da, db, fmt] = dlarray.operands(a, b);
            out = dlarray.wrap(da > db, fmt);
        end

        function out = lt(a, b)
            [da, db, fmt] = dlarray.operands(a, b);
            out = dlarray.wrap(da < db, fmt);
        end

        function out = ge(a, b)
            [da, db, fmt] = dlarray.operands(a, b);
            out = dlarray.wrap(da >= db, fmt);
        end

        function out = le(a, b)
            [da, db, fmt] = dlarray.operands(a, b);
            out = dlarray.wrap(da <= db, fmt);
        end

        % -- reductions and shape ------------------------------------------------------------------
        function out = sum(a, dim)
            if nargin < 2
                dim = find(size(a.Data) ~= 1, 1);
                if isempty(dim)
                    dim = 1;
                end
            end
            if ischar(dim)
                if ~strcmpi(dim, 'all')
                    error('dlarray:notImplemented', 'sum(X, ''%s'') is not in the double', dim);
                end
                out = dlarray.record('sum', {a}, sum(a.Data(:)), '', 'all');
            else
                out = dlarray.record('sum', {a}, sum(a.Data, dim), a.Format, dim);
            end
        end

        function out = mean(a, dim)
            if nargin < 2
                dim = find(size(a.Data) ~= 1, 1);
                if isempty(dim)
                    dim = 1;
                end
            end
            if ischar(dim)
                out = sum(a, dim) ./ numel(a.Data);
            else
                out = sum(a, dim) ./ size(a.Data, dim);
            end
        end

        function out = prod(a, dim)
            if nargin < 2
                dim = find(size(a.Data) ~= 1, 1);
                if isempty(dim)
                    dim = 1;
                end
            end
            out = dlarray.record('prod', {a}, prod(a.Data, dim), a.Format, dim);
        end

        function out = reshape(a, varargin)
            data = reshape(a.Data, varargin{:});
            out = dlarray.record('reshape', {a}, data, '', size(a.Data));
        end

        % -- elementwise functions -----------------------------------------------------------------
        function out = exp(a)
            out = dlarray.record('exp', {a}, exp(a.Data), a.Format, []);
        end

        function out = log(a)
            out = dlarray.record('log', {a}, log(a.Data), a.Format, []);
        end

        function out = sqrt(a)
            out = a.^0.5;
        end

        function out = abs(a)
            out = dlarray.record('abs', {a}, abs(a.Data), a.Format, []);
        end

        function out = tanh(a)
            out = dlarray.record('tanh', {a}, tanh(a.Data), a.Format, []);
        end

        % -- deep learning operations (compositions of the operations above) -----------------------
        function out = relu(a)
            % dlarray.relu: max(X, 0); derivative 0 for X <= 0.
            out = dlarray.record('relu', {a}, max(a.Data, 0), a.Format, []);
        end

        function out = leakyrelu(a, scale)
            % dlarray.leakyrelu: X for X > 0, scale * X otherwise (default scale 0.01).
            if nargin < 2
                scale = 0.01;
            end
            out = relu(a) - scale .* relu(-a);
        end

        function out = sigmoid(a)
            % dlarray.sigmoid: 1 ./ (1 + exp(-X)).
            out = 1 ./ (1 + exp(-a));
        end

        function out = softmax(a, varargin)
            % dlarray.softmax: exp(X) ./ sum(exp(X)) over the channel dimension 'C'.
            a = dlarray.withFormat(a, varargin, 'softmax');
            c = finddim(a, 'C');
            if isempty(c)
                error('dlarray:softmax', 'softmax needs a channel dimension ''C''; the format is ''%s''', a.Format);
            end
            shifted = a - max(a.Data, [], c);   % the shift does not change the value nor its derivative
            e = exp(shifted);
            out = e ./ sum(e, c);
        end

        function out = fullyconnect(X, weights, bias, varargin)
            % dlarray.fullyconnect: the weighted sum of the spatial, channel and unspecified data of each
            % observation plus bias; output format 'CB'. weights OutputSize x (input size), bias
            % OutputSize x 1.
            X = dlarray.withFormat(X, varargin, 'fullyconnect');
            if any(X.Format == 'T')
                error('dlarray:notImplemented', 'fullyconnect over a time dimension is not in the double');
            end
            b = finddim(X, 'B');
            if isempty(b)
                nobs = 1;
            else
                nobs = size(X.Data, b);
            end
            flat = reshape(stripdims(X), [], nobs);
            W = reshape(dlarray(weights), size(weights, 1), []);
            if size(W, 2) ~= size(flat, 1)
                error('dlarray:fullyconnect', 'weights have %d columns but each observation has %d elements', ...
                      size(W, 2), size(flat, 1));
            end
            Z = W * flat + reshape(dlarray(bias), [], 1);
            out = dlarray(Z, 'CB');
        end

        function loss = mse(Y, T, varargin)
            % dlarray.mse: half mean squared error, sum((Y - T).^2) / (2 N), N observations ('B'); an
            % unformatted scalar. Only the 'DataFormat' option (documented).
            [Y, T, nobs] = dlarray.lossInputs(Y, T, varargin, {}, 'mse');
            D = Y - T;
            loss = sum(D .* D, 'all') ./ (2 * nobs);
        end

        function loss = l2loss(Y, T, varargin)
            % dlarray.l2loss: sum((Y - T).^2) / normalization; 'NormalizationFactor' 'batch-size' (default),
            % 'all-elements', 'none'.
            [Y, T, nobs, opts] = dlarray.lossInputs(Y, T, varargin, {'NormalizationFactor', 'batch-size'}, 'l2loss');
            D = Y - T;
            loss = dlarray.normalized(sum(D .* D, 'all'), opts.NormalizationFactor, nobs, numel(Y.Data));
        end

        function loss = l1loss(Y, T, varargin)
            % dlarray.l1loss: sum(abs(Y - T)) / normalization (options as l2loss).
            [Y, T, nobs, opts] = dlarray.lossInputs(Y, T, varargin, {'NormalizationFactor', 'batch-size'}, 'l1loss');
            loss = dlarray.normalized(sum(abs(Y - T), 'all'), opts.NormalizationFactor, nobs, numel(Y.Data));
        end

        function loss = huber(Y, T, varargin)
            % dlarray.huber: d.^2/2 where abs(d) <= TransitionPoint (default 1), else
            % TransitionPoint * (abs(d) - TransitionPoint / 2); summed, normalized as l2loss.
            defaults = {'NormalizationFactor', 'batch-size'; 'TransitionPoint', 1};
            [Y, T, nobs, opts] = dlarray.lossInputs(Y, T, varargin, defaults, 'huber');
            D = Y - T;
            delta = opts.TransitionPoint;
            inside = double(abs(D.Data) <= delta);
            h = inside .* (0.5 .* D .* D) + (1 - inside) .* (delta .* (abs(D) - delta / 2));
            loss = dlarray.normalized(sum(h, 'all'), opts.NormalizationFactor, nobs, numel(Y.Data));
        end

        function loss = crossentropy(Y, T, varargin)
            % dlarray.crossentropy on probabilities: -sum(T .* log(Y)) / N ('single-label', default) or
            % -sum(T .* log(Y) + (1 - T) .* log(1 - Y)) / N ('ClassificationMode', 'multilabel');
            % 'NormalizationFactor' 'batch-size' (default) or 'none' in the double.
            [Y, T, nobs, opts] = dlarray.lossInputs(Y, T, varargin, ...
                                                    {'NormalizationFactor', 'batch-size'; ...
                                                     'ClassificationMode', 'single-label'}, 'crossentropy');
            if strcmpi(opts.NormalizationFactor, 'all-elements')
                error('dlarray:notImplemented', ['crossentropy NormalizationFactor ''all-elements'' is not in ', ...
                                                 'the double']);
            end
            if strcmpi(opts.ClassificationMode, 'multilabel')
                total = -sum(T .* log(Y) + (1 - T) .* log(1 - Y), 'all');
            else
                total = -sum(T .* log(Y), 'all');
            end
            loss = dlarray.normalized(total, opts.NormalizationFactor, nobs, numel(Y.Data));
        end

    end
    methods (Static)

        % -- the trace, used by the dlfeval and dlgradient doubles ----------------------------------
        function previous = traceBegin()
            % A new trace for a dlfeval call; returns the enclosing state (restored by traceEnd). Every
            % trace gets a new Number, so arrays of a finished trace never count as traced again.
            global hcDlarrayTrace
            previous = hcDlarrayTrace;
            if ~(isstruct(previous) && isfield(previous, 'Issued'))
                previous = struct('Number', 0, 'Issued', 0, 'Active', false, 'Recording', false);
            end
            number = previous.Issued + 1;
            hcDlarrayTrace = struct('Number', number, 'Issued', number, 'Active', true, 'Recording', true, ...
                                    'Count', 0, 'Ops', {cell(1, 256)}, 'Inputs', {cell(1, 256)}, ...
                                    'Outputs', {cell(1, 256)}, 'Aux', {cell(1, 256)}, 'Parents', {cell(1, 256)}, ...
                                    'Discarded', false(1, 256));
        end

        function traceEnd(previous)
            global hcDlarrayTrace
            if isstruct(hcDlarrayTrace) && isfield(hcDlarrayTrace, 'Issued')
                previous.Issued = max(previous.Issued, hcDlarrayTrace.Issued);
            end
            hcDlarrayTrace = previous;
        end

        function tf = tracing()
            global hcDlarrayTrace
            tf = ~isempty(hcDlarrayTrace) && hcDlarrayTrace.Active;
        end

        function out = noHigherDerivatives(x, fname)
            % x unchanged, marked as computed by FNAME (lstm, gru), which MATLAB documents as having no
            % higher-order derivatives (Answers 587696; the dlgradient page's limitations): its first
            % derivative passes through, a backward pass that is itself recorded ('EnableHigherDerivatives')
            % fails with the same error as prod.
            out = dlarray.record('nohigher', {x}, x.Data, x.Format, fname);
        end

        function x = leaf(x)
            % x as a new input of the current trace (what dlfeval does to its dlarray inputs).
            x = dlarray.record('leaf', {}, x.Data, x.Format, []);
        end

        function x = untraced(x)
            % The same values without trace (dlfeval's outputs).
            x.Id = 0;
            x.Trace = 0;
        end

        function tf = isTraced(x)
            global hcDlarrayTrace
            tf = isa(x, 'dlarray') && x.Id > 0 && ~isempty(hcDlarrayTrace) && hcDlarrayTrace.Active && ...
                 x.Trace == hcDlarrayTrace.Number;
        end

        function grads = backprop(y, xs, higher, retain)
            % Gradients of the traced scalar y with respect to the traced dlarray objects in the cell xs.
            global hcDlarrayTrace
            number = hcDlarrayTrace.Number;
            ops = hcDlarrayTrace.Ops;
            parentsOf = hcDlarrayTrace.Parents;
            inputsOf = hcDlarrayTrace.Inputs;
            outputsOf = hcDlarrayTrace.Outputs;
            auxOf = hcDlarrayTrace.Aux;
            discarded = hcDlarrayTrace.Discarded;
            ids = cellfun(@(x) x.Id, xs);
            yid = y.Id;
            lowest = min(ids);
            depends = false(1, yid);
            depends(ids(ids <= yid)) = true;
            for id = lowest + 1:yid
                if ~depends(id)
                    parents = parentsOf{id};
                    depends(id) = any(depends(parents(parents >= lowest)));
                end
            end
            wanted = false(1, yid);
            wanted(ids(ids <= yid)) = true;
            processed = false(1, yid);
            pending = cell(1, yid);
            has = false(1, yid);
            if depends(yid)
                pending{yid} = dlarray.wrap(ones(size(y.Data), 'like', y.Data), '');
                has(yid) = true;
            end
            wasRecording = hcDlarrayTrace.Recording;
            hcDlarrayTrace.Recording = higher;
            try
                for id = yid:-1:lowest
                    if ~has(id) || ~depends(id) || strcmp(ops{id}, 'leaf')
                        continue
                    end
                    if discarded(id)
                        error('dlgradient:traceDiscarded', ['the derivative trace was discarded by an earlier ', ...
                                                            'dlgradient call (RetainData false); use ', ...
                                                            '''RetainData'', true there']);
                    end
                    processed(id) = true;
                    inputs = inputsOf{id};
                    parts = dlarray.backward(ops{id}, inputs, outputsOf{id}, auxOf{id}, pending{id});
                    for k = 1:numel(inputs)
                        in = inputs{k};
                        if isempty(parts{k}) || ~isa(in, 'dlarray') || in.Id == 0 || in.Trace ~= number || ...
                           ~depends(in.Id)
                            continue
                        end
                        g = parts{k};
                        if ~strcmp(g.Format, in.Format)
                            g = dlarray.record('relabel', {g}, g.Data, in.Format, []);
                        end
                        if has(in.Id)
                            pending{in.Id} = pending{in.Id} + g;
                        else
                            pending{in.Id} = g;
                            has(in.Id) = true;
                        end
                    end
                    if ~higher && ~wanted(id)
                        pending{id} = [];
                    end
                end
            catch err
                hcDlarrayTrace.Recording = wasRecording;
                rethrow(err);
            end
            hcDlarrayTrace.Recording = wasRecording;
            if ~higher && ~retain
                hcDlarrayTrace.Discarded(processed) = true;
            end
            grads = cell(size(xs));
            for i = 1:numel(xs)
                x = xs{i};
                if x.Id <= yid && has(x.Id)
                    g = pending{x.Id};
                    if ~strcmp(g.Format, x.Format)
                        g = dlarray.record('relabel', {g}, g.Data, x.Format, []);
                    end
                else
                    g = dlarray.wrap(zeros(size(x.Data), 'like', x.Data), x.Format);
                end
                if ~higher
                    g = dlarray.untraced(g);
                end
                grads{i} = g;
            end
        end

    end
    methods (Static, Access = private)

        function out = wrap(data, fmt)
            out = dlarray();
            out.Data = data;
            out.Format = fmt;
        end

        function out = record(op, inputs, data, fmt, aux)
            % The result of an operation; a node of the trace when an operand is traced (or op is 'leaf').
            % (The hot path of the double: kept free of further method calls.)
            global hcDlarrayTrace
            out = dlarray();
            out.Data = data;
            out.Format = fmt;
            if isempty(hcDlarrayTrace) || ~hcDlarrayTrace.Active || ~hcDlarrayTrace.Recording
                return
            end
            number = hcDlarrayTrace.Number;
            parents = zeros(1, numel(inputs));
            count = 0;
            for k = 1:numel(inputs)
                in = inputs{k};
                if isa(in, 'dlarray') && in.Id > 0 && in.Trace == number
                    count = count + 1;
                    parents(count) = in.Id;
                end
            end
            if count == 0 && ~strcmp(op, 'leaf')
                return
            end
            if ~isreal(data)
                error('dlarray:complex', 'complex values cannot be traced');
            end
            n = hcDlarrayTrace.Count + 1;
            if n > numel(hcDlarrayTrace.Ops)
                grow = numel(hcDlarrayTrace.Ops);
                hcDlarrayTrace.Ops{2 * grow} = [];
                hcDlarrayTrace.Inputs{2 * grow} = [];
                hcDlarrayTrace.Outputs{2 * grow} = [];
                hcDlarrayTrace.Aux{2 * grow} = [];
                hcDlarrayTrace.Parents{2 * grow} = [];
                hcDlarrayTrace.Discarded(2 * grow) = false;
            end
            out.Id = n;
            out.Trace = number;
            hcDlarrayTrace.Count = n;
            hcDlarrayTrace.Ops{n} = op;
            hcDlarrayTrace.Inputs{n} = inputs;
            hcDlarrayTrace.Outputs{n} = out;
            hcDlarrayTrace.Aux{n} = aux;
            hcDlarrayTrace.Parents{n} = parents(1:count);
        end

        function parts = backward(op, in, out, aux, gy)
            % Gradients with respect to each operand, written with dlarray operations (so that they are
            % recorded when higher derivatives are enabled). [] for operands that are not dlarray objects.
            parts = cell(1, numel(in));
            switch op
                case 'plus'
                    parts = {dlarray.sumTo(gy, in{1}), dlarray.sumTo(gy, in{2})};
                case 'minus'
                    parts = {dlarray.sumTo(gy, in{1}), dlarray.sumTo(-gy, in{2})};
                case 'uminus'
                    parts{1} = -gy;
                case 'times'
                    if isa(in{1}, 'dlarray')
                        parts{1} = dlarray.sumTo(gy .* in{2}, in{1});
                    end
                    if isa(in{2}, 'dlarray')
                        parts{2} = dlarray.sumTo(gy .* in{1}, in{2});
                    end
                case 'rdivide'
                    if isa(in{1}, 'dlarray')
                        parts{1} = dlarray.sumTo(gy ./ in{2}, in{1});
                    end
                    if isa(in{2}, 'dlarray')
                        parts{2} = dlarray.sumTo(-gy .* out ./ in{2}, in{2});
                    end
                case 'power'
                    a = in{1};
                    p = in{2};
                    if isa(a, 'dlarray')
                        parts{1} = dlarray.sumTo(gy .* p .* a.^(p - 1), a);
                    end
                    if isa(p, 'dlarray')
                        parts{2} = dlarray.sumTo(gy .* out .* log(a), p);
                    end
                case 'mtimes'
                    if isa(in{1}, 'dlarray')
                        parts{1} = gy * in{2}.';
                    end
                    if isa(in{2}, 'dlarray')
                        parts{2} = in{1}.' * gy;
                    end
                case 'transpose'
                    parts{1} = gy.';
                case 'sum'
                    parts{1} = gy .* ones(size(in{1}), 'like', in{1}.Data);
                case 'prod'
                    if dlarray.recording()
                        error('dlgradient:higherDerivatives', ['dlgradient does not support higher-order ', ...
                                                               'derivatives that depend on prod']);
                    end
                    parts{1} = gy .* out ./ in{1};
                case 'nohigher'
                    if dlarray.recording()
                        error('dlgradient:higherDerivatives', ['dlgradient does not support higher-order ', ...
                                                               'derivatives that depend on %s'], aux);
                    end
                    parts{1} = gy;
                case 'exp'
                    parts{1} = gy .* out;
                case 'log'
                    parts{1} = gy ./ in{1};
                case 'abs'
                    parts{1} = gy .* sign(in{1}.Data);
                case 'tanh'
                    parts{1} = gy .* (1 - out .* out);
                case 'relu'
                    parts{1} = gy .* double(in{1}.Data > 0);
                case 'reshape'
                    parts{1} = reshape(gy, aux);
                case 'relabel'
                    parts{1} = dlarray.record('relabel', {gy}, gy.Data, in{1}.Format, []);
                case 'permute'
                    parts{1} = dlarray.record('ipermute', {gy}, ipermute(gy.Data, aux), in{1}.Format, aux);
                case 'ipermute'
                    parts{1} = dlarray.record('permute', {gy}, permute(gy.Data, aux), in{1}.Format, aux);
                case 'index'
                    full = zeros(size(in{1}.Data), 'like', gy.Data);
                    full(aux{:}) = gy.Data;
                    parts{1} = dlarray.record('scatter', {gy}, full, in{1}.Format, aux);
                case 'scatter'
                    parts{1} = dlarray.record('index', {gy}, gy.Data(aux{:}), in{1}.Format, aux);
                otherwise
                    error('dlarray:notImplemented', 'no derivative of %s in the double', op);
            end
        end

        function tf = recording()
            global hcDlarrayTrace
            tf = dlarray.tracing() && hcDlarrayTrace.Recording;
        end

        function g = sumTo(g, like)
            % g summed over the dimensions that implicit expansion added to an operand shaped like LIKE.
            if ~isa(like, 'dlarray')
                g = [];
                return
            end
            target = size(like.Data);
            current = size(g.Data);
            for d = 1:numel(current)
                if d > numel(target) || (target(d) == 1 && current(d) ~= 1)
                    g = sum(g, d);
                end
            end
            if ~isequal(size(g.Data), target)
                g = reshape(g, target);
            end
        end

        function [da, db, fa, fb] = operandData(a, b)
            fa = '';
            fb = '';
            if isa(a, 'dlarray')
                da = a.Data;
                fa = a.Format;
            else
                da = a;
            end
            if isa(b, 'dlarray')
                db = b.Data;
                fb = b.Format;
            else
                db = b;
            end
        end

        function [da, db, fmt] = operands(a, b)
            [da, db, fa, fb] = dlarray.operandData(a, b);
            if ~isempty(fa) && ~isempty(fb) && ~strcmp(fa, fb)
                error('dlarray:formatMismatch', 'operands have different formats ''%s'' and ''%s''', fa, fb);
            end
            fmt = fa;
            if isempty(fmt)
                fmt = fb;
            end
        end

        function [data, fmt, order] = labelled(X, fmt)
            fmt = upper(char(fmt));
            if any(~ismember(fmt, 'SCBTU'))
                error('dlarray:invalidFormat', 'format ''%s'' may only contain S, C, B, T and U', fmt);
            end
            if sum(fmt == 'C') > 1 || sum(fmt == 'B') > 1 || sum(fmt == 'T') > 1
                error('dlarray:invalidFormat', 'format ''%s'' has C, B or T more than once', fmt);
            end
            if numel(fmt) < ndims(X) && ~(numel(fmt) == 1 && isvector(X))
                error('dlarray:invalidFormat', 'format ''%s'' has fewer labels than X has dimensions (%d)', ...
                      fmt, ndims(X));
            end
            if numel(fmt) == 1
                % One label: a vector along that dimension.
                data = X(:);
                order = [1 2];
                return
            end
            [~, order] = sort(arrayfun(@(c) find('SCBTU' == c), fmt));  % stable: S S keep their order
            data = permute(X, order);
            fmt = fmt(order);
        end

        function X = withFormat(X, args, caller)
            % X formatted by its own format or by a 'DataFormat', FMT option (the only option read).
            if ~isa(X, 'dlarray')
                X = dlarray(X);
            end
            if isempty(args)
                fmt = '';
            elseif numel(args) == 2 && strcmpi(args{1}, 'DataFormat')
                fmt = char(args{2});
            else
                error('dlarray:notImplemented', '%s: only the ''DataFormat'' option is in the double', caller);
            end
            if ~isempty(fmt)
                if ~isempty(X.Format)
                    error('dlarray:invalidFormat', '%s: X is formatted; DataFormat is for unformatted input', caller);
                end
                X = dlarray.record('relabel', {X}, X.Data, fmt, []);
            elseif isempty(X.Format)
                error('dlarray:invalidFormat', '%s: X must be a formatted dlarray or DataFormat given', caller);
            end
        end

        function [Y, T, nobs, opts] = lossInputs(Y, T, args, defaults, caller)
            % Predictions formatted (own format or DataFormat), targets in the same format: a formatted
            % T must have Y's format, an unformatted or numeric T takes it (loss function pages).
            opts = struct();
            for i = 1:size(defaults, 1)
                opts.(defaults{i, 1}) = defaults{i, 2};
            end
            fmtArgs = {};
            if mod(numel(args), 2) ~= 0
                error('dlarray:nameValue', '%s: options must be name-value pairs', caller);
            end
            for i = 1:2:numel(args)
                name = char(args{i});
                k = find(strcmpi(name, [defaults(:, 1); {'DataFormat'}]), 1);
                if isempty(k)
                    error('dlarray:notImplemented', '%s: option ''%s'' is not in the double', caller, name);
                elseif k > size(defaults, 1)
                    fmtArgs = {'DataFormat', args{i + 1}};
                else
                    value = args{i + 1};
                    if ~isnumeric(value)
                        value = char(value);
                    end
                    opts.(defaults{k, 1}) = value;
                end
            end
            Y = dlarray.withFormat(Y, fmtArgs, caller);
            if isa(T, 'dlarray') && ~isempty(T.Format) && ~strcmp(T.Format, Y.Format)
                error('dlarray:formatMismatch', '%s: targets are formatted ''%s'' but predictions ''%s''', ...
                      caller, T.Format, Y.Format);
            end
            tsize = size(T);
            ysize = size(Y.Data);
            if ~isequal(tsize, ysize)
                % The wording of MATLAB's own error (quoted in public reports of it).
                error('dlarray:sizeMismatch', 'Size of predictions and target values arguments must match.');
            end
            if ~isfield(opts, 'NormalizationFactor') || strcmpi(opts.NormalizationFactor, 'batch-size') || ...
               strcmpi(opts.NormalizationFactor, 'none') || strcmpi(opts.NormalizationFactor, 'all-elements')
                b = finddim(Y, 'B');
            else
                error('dlarray:notImplemented', '%s: NormalizationFactor ''%s'' is not in the double', caller, ...
                      opts.NormalizationFactor);
            end
            nobs = 1;
            if ~isempty(b)
                nobs = size(Y.Data, b);
            end
        end

        function loss = normalized(total, how, nobs, nelements)
            switch lower(how)
                case 'batch-size'
                    loss = total ./ nobs;
                case 'all-elements'
                    loss = total ./ nelements;
                case 'none'
                    loss = total;
            end
        end

    end
end
