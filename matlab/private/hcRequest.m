function req = hcRequest(fcn, net, X, T, opts, args, kwargs)
    % HCREQUEST  The request struct sent to the Python bridge by every transport (internal).
    %   REQ = HCREQUEST(FCN, NET, X, T, OPTS, ARGS, KWARGS) describes the call
    %     bridge.api.FCN(spec, X, T, ARGS{:}, **options)
    %   with options x_format, t_format, loss ('' when not given: Python applies the default rule),
    %   loss_options, dtype, memory_budget, then the fields of KWARGS (the caller's own keyword arguments)
    %   and of OPTS.PythonOptions (all plain values: hcParseOptions converted strings). Fields:
    %     Format    'hessiancore.request/1'     Function  FCN (char)
    %     Spec      dlnetworkToSpec(NET), an input Normalization function handle already applied to X
    %               (hcApplyNormalization)      X, T      1xM cells of double arrays
    %     Multi     true when X was a cell (Python receives lists)
    %     Args      1xA cell of positional arguments after T (double arrays)
    %     Options   struct of keyword arguments
    %     Sizes     struct X, T, Args, Learnables, State: 1xN cells of full sizes, so Python restores
    %               shapes that .mat loading squeezes (trailing singleton dimensions, 1x1 values)
    if nargin < 6
        args = {};
    end
    if nargin < 7
        kwargs = struct();
    end
    xd = hcData(X, opts.DataFormat, 'X');
    td = hcData(T, opts.TargetFormat, 'T');
    if isempty(xd.Format)
        error('hessiancore:invalidInput', ['X has no format: pass a formatted dlarray, e.g. dlarray(X, ''CB''), ', ...
                                           'or give ''DataFormat'', ''CB''']);
    end
    if xd.Multi ~= td.Multi || numel(xd.Data) ~= numel(td.Data)
        error('hessiancore:invalidInput', 'X and T must both be one minibatch or cell arrays of the same length');
    end
    [spec, xd] = hcApplyNormalization(net, dlnetworkToSpec(net), xd);
    req = struct();
    req.Format = 'hessiancore.request/1';
    req.Function = fcn;
    req.Spec = spec;
    req.X = xd.Data;
    req.T = td.Data;
    req.Multi = xd.Multi;
    req.Args = args;
    dtype = 'float64';
    if strcmp(opts.DataType, 'single')
        dtype = 'float32';
    end
    options = struct('x_format', xd.Format, 't_format', td.Format, 'loss', opts.Loss, ...
                     'loss_options', opts.LossOptions, 'dtype', dtype, 'memory_budget', opts.MemoryBudget);
    options = mergeFields(options, kwargs);
    req.Options = mergeFields(options, opts.PythonOptions);
    argSizes = cellfun(@size, args, 'UniformOutput', false);
    req.Sizes = struct('X', {xd.Sizes}, 'T', {td.Sizes}, 'Args', {argSizes}, ...
                       'Learnables', {cellfun(@size, req.Spec.Learnables.Value, 'UniformOutput', false)}, ...
                       'State', {cellfun(@size, req.Spec.State.Value, 'UniformOutput', false)});
end

function s = mergeFields(s, extra)
    names = fieldnames(extra);
    for i = 1:numel(names)
        s.(names{i}) = extra.(names{i});
    end
end
