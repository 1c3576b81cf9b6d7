function own = hcFormatOf(x, fmt, what)
    % HCFORMATOF  The format of one minibatch: its own (a formatted dlarray) or the format option (internal).
    %   OWN = HCFORMATOF(X, FMT, WHAT): dims(X) for a formatted dlarray, else FMT; '' when neither is known.
    %   X must be a dlarray or a numeric/logical array, and a dlarray's own format must agree with FMT when
    %   both are given ('hessiancore:invalidInput' naming WHAT otherwise). One check for both backends
    %   (hcData for the Python bridge, hcModelProblem for MATLAB's automatic differentiation).
    own = '';
    if isa(x, 'dlarray')
        own = dims(x);
    elseif ~(isnumeric(x) || islogical(x))
        error('hessiancore:invalidInput', '%s must be a dlarray, a numeric array or a cell array of them; got a %s', ...
              what, class(x));
    end
    if ~isempty(own) && ~isempty(fmt) && ~strcmp(own, fmt)
        error('hessiancore:invalidInput', '%s is a dlarray formatted ''%s'' but the format option says ''%s''', ...
              what, own, fmt);
    end
    if isempty(own)
        own = fmt;
    end
end
